//! Fixtures for the manager's end-to-end tests: images built locally, berthd on temp dirs.
