"""`python -m services.ledger`: serve the ledger with uvicorn."""

from services.ledger.app import create_app
from services.ledger.settings import LedgerSettings
from shared.serve import serve

if __name__ == "__main__":
    settings = LedgerSettings()
    serve(create_app(settings), settings)
