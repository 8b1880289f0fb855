"""The live pass monitor: a web page showing a pass from the daemons' telemetry.

`satqkd monitor --broker URL` (live) or `--replay ARCHIVE` serves it; `state.PassView` folds
the telemetry into what the page shows, `app` is the web application (Starlette + uvicorn,
pushed to the page with Server-Sent Events) and `static/` the page itself.
"""
