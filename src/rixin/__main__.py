from rixin.cli.main import app

app()
