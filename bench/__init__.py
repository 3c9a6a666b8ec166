"""`make bench`: the platform's figures, each measured against a baseline in the same run."""
