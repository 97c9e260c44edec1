"""`python -m services.dispatch`: serve dispatch with uvicorn."""

from services.dispatch.app import create_app
from services.dispatch.settings import DispatchSettings
from shared.serve import serve

if __name__ == "__main__":
    settings = DispatchSettings()
    serve(create_app(settings), settings)
