"""The nightly batch job: `sources` reads the inbox, `store` keeps results (SQLite or any SQLAlchemy database),
`runner` scores resumably in chunks, `report` writes the morning HTML report and the day's exports."""
