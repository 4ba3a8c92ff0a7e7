"""The documented guarantees under attack: chaos runs, crashes, fuzzing, full disks, leaked secrets."""
