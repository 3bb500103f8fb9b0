//! Traffic layers in front of Docker containers. HAProxy, through its Runtime API, is the first.

pub mod fanout;
pub mod haproxy;
