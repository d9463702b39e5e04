"""The entry point of one replica: `python -m mwtui.engine.worker APP_REF --pool NAME ...`.

A replica imports the user's file, runs `@enter`, builds every web endpoint of its pool (FastAPI
wrapper, ASGI or WSGI factory, web_server function), starts their lifespans, serves them (uvicorn,
gunicorn, or the user's own server), and on SIGTERM runs lifespan shutdowns and `@exit` on the way out.
It tells the supervisor how it went on the ready pipe (see `report`).
"""
