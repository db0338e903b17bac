//! Evaluation and benchmark commands (stub).

pub fn cli_nlu_eval(_args: &[String]) -> i32 {
    2
}

pub fn cli_nlu_bench(_args: &[String]) -> i32 {
    2
}
