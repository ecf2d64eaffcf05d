//! Devices as principals: the device CA (`ca`) and the `DeviceEnrollment` service devices
//! call on their own listener (`service`).

pub mod ca;
pub mod listener;
pub mod service;
