//! The PostgreSQL rows of `make bench`: a private cluster (the tests' helper: initdb in a
//! temporary folder as a non-root user, loopback, stopped at the end), then one botd on it
//! beside the SQLite rows of the same run (Converse and Messenger), and three botd instances
//! on one database behind a round-robin proxy (Converse).

#[path = "../../tests/common/pg.rs"]
mod pg;
#[path = "../../tests/common/proxy.rs"]
mod proxy;

use crate::procs::{self, fresh_data, Proc};
use crate::scenario::Target;
use crate::{channels, measure_converse, measure_converse_on, Options, PgResults, Results};

pub fn run(o: &Options, r: &Results) -> Result<PgResults, String> {
    // The helper asserts (it is the tests'): a cluster that cannot start is a missing row.
    let cluster = std::panic::catch_unwind(pg::Cluster::private).map_err(|_| {
        "no PostgreSQL cluster could be started (is the postgresql package installed?)".to_string()
    })?;
    let mut out = PgResults::default();
    let mut client = cluster.client("postgres");
    out.server = client
        .query_one("SHOW server_version", &[])
        .map(|row| row.get::<_, String>(0))
        .unwrap_or_default();
    drop(client);

    let start = |data: &std::path::Path, url: &str| -> Result<Proc, String> {
        let mut cmd = procs::botd_command(&o.botd, data);
        cmd.env("DATABASE_URL", url);
        Proc::start(cmd)
    };

    // One instance, Converse.
    let url = cluster.database("converse");
    let data = fresh_data(&o.work.join("pg-converse"))?;
    let botd = start(&data, &url)?;
    for users in [1usize, 16] {
        let m = measure_converse(
            &botd,
            Target::Botd,
            &format!("p{users}"),
            users,
            r.warmup,
            r.measure,
        );
        println!("  1 instance, {users:>2} users: {:.0}/s", m.load.per_second);
        out.converse.push((users, m));
    }
    botd.stop();

    // Three instances on one database, behind the proxy.
    let url = cluster.database("three");
    let data = fresh_data(&o.work.join("pg-three"))?;
    let three = (0..3)
        .map(|_| start(&data, &url))
        .collect::<Result<Vec<_>, _>>()?;
    let ports: Vec<u16> = three.iter().map(|p| p.port).collect();
    let pids: Vec<u32> = three.iter().map(|p| p.pid()).collect();
    let rr = proxy::RoundRobin::start(&ports);
    for users in [16usize, 48] {
        let m = measure_converse_on(
            rr.port,
            &pids,
            Target::Botd,
            &format!("t{users}"),
            users,
            r.warmup,
            r.measure,
        );
        println!(
            "  3 instances, {users:>2} users: {:.0}/s",
            m.load.per_second
        );
        out.three.push((users, m));
    }
    drop(rr);
    for p in three {
        p.stop();
    }

    // One instance, Messenger (the same pipeline as the SQLite row).
    let mut s = crate::channels_settings(o, r);
    s.database_url = Some(cluster.database("messenger"));
    let work = o.work.join("pg");
    s.work = &work;
    out.messenger = channels::messenger(&s);
    Ok(out)
}
