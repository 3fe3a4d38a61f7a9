"""The command bus: one grammar, authorization, validation, sandbox and audit for every frontend."""
