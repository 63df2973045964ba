//! What runs an app. `native` starts processes (level `none`); later levels plug in here.

pub mod native;
