"""Helpers shared by the tests (servers, stacks, status page sessions); no tests here."""
