"""CrypticsLab application package: settings, CLI, Faust app, exchange client, simulated venue, embedded stack."""
