"""`tracenet serve`: a local web page to tap objects and see TraceNet's masks and costs."""
