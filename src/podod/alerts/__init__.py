"""Alert rules, the engine that evaluates them, silences, maintenance windows, notifiers."""
