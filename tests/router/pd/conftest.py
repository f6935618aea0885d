from tests.doubles.fixtures import (
    fake_engine_factory,  # noqa: F401  (pytest fixture)
    make_fake_engine_fixture,
)

# Engines shared by a whole test module (reset between tests with `.reset()`).
fake_engine_factory_module = make_fake_engine_fixture("module")
