//! HAProxy Runtime API client (to be written).
