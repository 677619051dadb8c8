"""tvifm."""
