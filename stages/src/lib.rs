//! Built-in protocon stages. Each module holds one stage, its configuration and its tests.
