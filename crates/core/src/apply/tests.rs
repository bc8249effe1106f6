//! Unit tests of `State::apply`, one per behaviour and per error path.
