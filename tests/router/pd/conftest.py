from tests.doubles.fixtures import fake_engine_factory  # noqa: F401  (pytest fixture)
