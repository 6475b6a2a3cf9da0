from twin.cli import app

app()
