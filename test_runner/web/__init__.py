"""The web pages for runs and test cases (server-rendered; a little JavaScript for live logs)."""
