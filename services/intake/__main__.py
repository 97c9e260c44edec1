"""`python -m services.intake`: serve intake with uvicorn."""

from services.intake.app import create_app
from services.intake.settings import IntakeSettings
from shared.serve import serve

if __name__ == "__main__":
    settings = IntakeSettings()
    serve(create_app(settings), settings)
