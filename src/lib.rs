//! botd: runs Botpress v11 bots and talks to people over Converse, Messenger and Telegram.
//!
//! Data walks one way: a channel turns what arrives into an [`engine::Event`], the engine plays
//! one turn (NLU → decision → dialog → render), and the channel delivers the rendered payloads.

pub mod app;
pub mod channels;
pub mod config;
pub mod engine;
pub mod http;
pub mod ratelimit;
pub mod store;
