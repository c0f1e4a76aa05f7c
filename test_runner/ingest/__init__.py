"""Progress reported by machines that run their own suites: dry run, test start, test stop."""
