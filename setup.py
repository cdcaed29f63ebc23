from setuptools import find_namespace_packages, setup

# dagster core 1.13.N pairs with its libraries 0.29.N and each library pins core exactly;
# unpinned, pip backtracks to a 2021 dagster-postgres. Move these four together.
DAGSTER = "1.13.27"
DAGSTER_LIBS = "0.29.27"

setup(
    name="xmas_pipeline",
    version="0.1.0",
    description="A holiday lead-nurture email campaign run by Dagster, with Notion as the CRM.",
    # Namespace discovery so the template folders count as package data directories; plain find_packages
    # makes setuptools print a screenful of "Package would be ignored" warnings on every install.
    packages=find_namespace_packages(include=["xmas_pipeline", "xmas_pipeline.*"]),
    package_data={"xmas_pipeline": ["campaign/files/*.yaml", "campaign/files/templates/*/*"]},
    include_package_data=True,
    python_requires=">=3.11",
    install_requires=[
        f"dagster=={DAGSTER}",
        f"dagster-webserver=={DAGSTER}",
        f"dagster-graphql=={DAGSTER}",
        "notion-client>=3.1,<4",
        "pandas>=2.2",
        "requests>=2.32",
        "pydantic[email]>=2.7",
        "pyyaml>=6",
        # SQLAlchemy Core for the local store (SQLite by default, Postgres by URL).
        "sqlalchemy>=2.0",
        # Intake: FastAPI on uvicorn; standardwebhooks verifies the website's signatures.
        "fastapi>=0.110",
        "uvicorn>=0.30",
        "python-multipart>=0.0.9",
        "standardwebhooks>=1.0",
        # Templates: sandboxed, autoescaped Jinja2.
        "jinja2>=3.1",
        "httpx>=0.27",
    ],
    extras_require={
        "postgres": [f"dagster-postgres=={DAGSTER_LIBS}", "psycopg2-binary>=2.9"],
        "dev": [
            "pytest>=8",
            "pytest-timeout>=2.3",
            "aiosmtpd>=1.4.6",
            "trustme>=1.1",
            # Property-based tests of the send window (any instant, any IANA zone, across DST changes).
            "hypothesis>=6.100",
            # The intake's OpenAPI contract test (its CLI, every check); 4.x config and check names.
            "schemathesis>=4.32,<5",
            "psycopg2-binary>=2.9",
            f"dagster-postgres=={DAGSTER_LIBS}",
            # The browser test drives Debian's chromium (no `playwright install`: its download is not needed).
            "playwright>=1.49,<2",
        ],
    },
    entry_points={"console_scripts": ["xmas=xmas_pipeline.cli:main"]},
)
