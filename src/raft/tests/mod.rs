//! Scripted tests for the core.
