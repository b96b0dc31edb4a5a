"""The guide's application (its minimal example and POST route), backend from the environment."""

from fastapi import Body, FastAPI

from cache_middleware.decorators import cache
from cache_middleware.helpers import auto_configure_backend
from cache_middleware.middleware import CacheMiddleware

app = FastAPI()
app.add_middleware(CacheMiddleware, backend=auto_configure_backend())


@app.get("/")
@cache(timeout=300)
async def read_root():  # type: ignore[no-untyped-def]
    return {"Hello": "World"}


@app.get("/items/{item_id}")
@cache(timeout=600)
async def read_item(item_id: int, q: str = None):  # type: ignore[no-untyped-def,assignment]
    return {"item_id": item_id, "q": q}


@app.post("/calculate")
@cache(timeout=300)
async def calculate(data: dict = Body(...)):  # type: ignore[no-untyped-def]  # noqa: B008
    numbers = data.get("numbers", [])
    result = sum(x**2 for x in numbers)
    return {"input": data, "result": result}
