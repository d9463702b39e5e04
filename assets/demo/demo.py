"""mwtui's demo: one endpoint of every kind Modal offers, a function they call and a scheduled one,
written exactly as for Modal.

Run it with `make run` (the terminal app) or `mwtui serve assets/demo/demo.py` (headless).
"""

import os
import subprocess
import sys
import time

import modal

app = modal.App("demo")
image = modal.Image.debian_slim().pip_install("fastapi[standard]", "flask")


# A single-route FastAPI endpoint: GET http://demo-hello.localhost:8470/?name=you
@app.function(image=image)
@modal.fastapi_endpoint(method="GET")
def hello(name: str = "world"):
    return {"message": f"Hello, {name}!"}


# A POST endpoint with its own label, docs at /docs, and a custom domain.
@app.function(image=image)
@modal.fastapi_endpoint(method="POST", label="echo", docs=True, custom_domains=["echo.example.com"])
def echo(data: dict):
    return {"received": data, "at": time.time()}


# Only callers with a Modal-Key / Modal-Secret token get through (see `mwtui token create`).
@app.function(image=image)
@modal.fastapi_endpoint(method="POST", requires_proxy_auth=True)
def secure(data: dict):
    return {"status": "authenticated", "data": data}


# A full ASGI app with several routes and a lifespan.
@app.function(image=image, min_containers=1)
@modal.concurrent(max_inputs=8)
@modal.asgi_app(label="api")
def api():
    from fastapi import FastAPI

    web_app = FastAPI()
    items: list[dict] = []

    @web_app.get("/")
    def index():
        return {"message": "Welcome", "routes": ["/", "/items"]}

    @web_app.get("/items")
    def list_items():
        return items

    @web_app.post("/items")
    def create_item(item: dict):
        items.append(item)
        return {"created": item}

    return web_app


# A WSGI (Flask) app, served by gunicorn.
@app.function(image=image)
@modal.wsgi_app(label="flask-app")
def flask_app():
    from flask import Flask

    web = Flask(__name__)

    @web.route("/")
    def index():
        return "Hello from Flask!"

    @web.route("/api/data")
    def api_data():
        return {"data": [1, 2, 3]}

    return web


# Any HTTP server of your own: here Python's file server on port 8765.
@app.function()
@modal.web_server(8765, startup_timeout=10)
def files():
    subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "0.0.0.0", "8765"])


# A plain function has no URL: the endpoint below calls it, and the call runs in its own pool (its own
# process and secret; the caller never sees GREETING). Its row shows who called it.
@app.function(image=image, secrets=[modal.Secret.from_dict({"GREETING": "Howdy"})])
def greet(name: str) -> str:
    return f"{os.environ['GREETING']}, {name}!"


# GET http://demo-greeting.localhost:8470/?name=you
@app.function(image=image)
@modal.fastapi_endpoint(method="GET")
def greeting(name: str = "world"):
    return {"message": greet.remote(name)}


# Runs every ten minutes while served; `n` on its row runs it now.
@app.function(schedule=modal.Period(minutes=10))
def tidy():
    print("tidying up")


# A class: one replica serves both methods, so they share instance state.
@app.cls(image=image)
class Counter:
    @modal.enter()
    def setup(self):
        self.count = 0
        self.started = time.time()

    @modal.fastapi_endpoint(method="POST")
    def bump(self):
        self.count += 1
        return {"count": self.count}

    @modal.fastapi_endpoint(method="GET")
    def value(self):
        return {"count": self.count, "up_s": round(time.time() - self.started, 1)}
