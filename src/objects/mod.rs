//! The WSK objects (layer 4): the registration and its provider captures,
//! sockets as typestates held by owned handles (with their futures and
//! blocking calls), addresses, and what deregistration needs to end them
//! all: the tracking list and run-down protection.

pub mod addr;
pub mod names;
pub mod registration;
pub mod rundown;
pub mod socket;
pub mod tracking;
