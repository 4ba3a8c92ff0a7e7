"""The project's files outside the package: deployment files, the benchmark, the checkout itself."""
