//! Health checks and the threshold state machine (to be written).
