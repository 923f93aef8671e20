"""The in-process store: states under striped locks, charges, overrides, sweeping, slots."""
