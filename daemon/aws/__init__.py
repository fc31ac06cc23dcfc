"""AWS access: sessions and AssumeRole, clients, the call wrapper, error taxonomy, discovery."""
