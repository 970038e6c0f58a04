//! Typed, layered configuration.
