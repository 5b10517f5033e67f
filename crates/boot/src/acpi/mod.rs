//! ACPI tables (in progress)
