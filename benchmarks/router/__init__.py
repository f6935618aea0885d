"""Router overhead benchmark: the same load direct to fake engines and through routers."""
