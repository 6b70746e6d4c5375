//! deploy/slurm/oni.sbatch on a real one-node Slurm cluster (Debian's munge, slurmctld and
//! slurmd, installed by scripts/test.sh, configured and started here in a temporary
//! directory, stopped at the end): the job trains keyroom with a learner step and two actor
//! steps; cancelling one actor step leaves training going; `scontrol requeue` (what Slurm does
//! on a node failure or preemption) stops the job with a final checkpoint and the requeued job
//! resumes from it; cancelling the job leaves a final checkpoint; a resubmitted job resumes
//! from it.

mod support;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

/// munged, slurmctld and slurmd for one node on 127.0.0.1, with every file under `dir`.
/// Dropping it cancels the jobs, waits for them, and stops the daemons.
struct Cluster {
    dir: PathBuf,
    conf: PathBuf,
    daemons: Vec<Proc>,
}

impl Cluster {
    fn start(dir: &Path) -> Cluster {
        for tool in ["munged", "slurmctld", "slurmd", "sbatch"] {
            let found = ["/usr/sbin", "/usr/bin"].iter().any(|d| Path::new(d).join(tool).exists());
            assert!(
                found,
                "{tool} is not installed: scripts/test.sh installs munge, slurmctld, slurmd and slurm-client"
            );
        }
        let dir = dir.join("slurm");
        for d in ["munge", "state", "spool", "log"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("munge"), std::fs::Permissions::from_mode(0o700)).unwrap();
        let key = dir.join("munge/munge.key");
        let st = Command::new("mungekey").args(["--create", "--force", "--keyfile"]).arg(&key).status().unwrap();
        assert!(st.success(), "mungekey failed");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let socket = dir.join("munge/munge.sock");
        let mut daemons = vec![Proc::spawn(
            "munged",
            &dir.join("log"),
            Command::new("munged")
                .args(["--foreground", "--force"])
                .arg(format!("--key-file={}", key.display()))
                .arg(format!("--socket={}", socket.display()))
                .arg(format!("--pid-file={}", dir.join("munge/munged.pid").display()))
                .arg(format!("--log-file={}", dir.join("munge/munged.log").display()))
                .arg(format!("--seed-file={}", dir.join("munge/seed").display())),
        )];
        wait_until("munged's socket", Duration::from_secs(20), || socket.exists());

        let host = String::from_utf8(Command::new("hostname").arg("-s").output().unwrap().stdout).unwrap();
        let host = host.trim();
        let (ctld_port, d_port) = (free_port(), free_port());
        let d = dir.display();
        let conf = dir.join("slurm.conf");
        std::fs::write(
            &conf,
            format!(
                "ClusterName=onitest\nSlurmctldHost={host}(127.0.0.1)\nSlurmctldPort={ctld_port}\nSlurmdPort={d_port}\n\
                 AuthType=auth/munge\nAuthInfo=socket={d}/munge/munge.sock,cred_expire=10\nCredType=cred/munge\n\
                 SlurmUser=root\nSlurmdUser=root\nStateSaveLocation={d}/state\nSlurmdSpoolDir={d}/spool\n\
                 SlurmctldPidFile={d}/slurmctld.pid\nSlurmdPidFile={d}/slurmd.pid\n\
                 SlurmctldLogFile={d}/log/slurmctld.log\nSlurmdLogFile={d}/log/slurmd.log\n\
                 ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\nMpiDefault=none\n\
                 SelectType=select/cons_tres\nSelectTypeParameters=CR_Core\nReturnToService=2\n\
                 JobAcctGatherType=jobacct_gather/none\nAccountingStorageType=accounting_storage/none\n\
                 SlurmdParameters=config_overrides\nKillWait=30\n\
                 NodeName={host} NodeAddr=127.0.0.1 CPUs=4 RealMemory=8000 State=UNKNOWN\n\
                 PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP\n"
            ),
        )
        .unwrap();
        let conf_arg = conf.display().to_string();
        let logs = dir.join("log");
        daemons.push(Proc::spawn("slurmctld", &logs, Command::new("slurmctld").args(["-D", "-i", "-f", &conf_arg])));
        daemons.push(Proc::spawn("slurmd", &logs, Command::new("slurmd").args(["-D", "-f", &conf_arg])));
        let cluster = Cluster { dir, conf, daemons };
        wait_until("an idle Slurm node", Duration::from_secs(60), || {
            cluster.run("sinfo", &["-h", "-o", "%t"]).is_some_and(|s| s.trim() == "idle")
        });
        cluster
    }

    /// A Slurm command's stdout, or `None` when it fails.
    fn run(&self, tool: &str, args: &[&str]) -> Option<String> {
        let out = Command::new(tool).args(args).env("SLURM_CONF", &self.conf).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Submits deploy/slurm/oni.sbatch from the repository root; returns the job id.
    fn submit(&self, run_dir: &Path, ports: (u16, u16), oni_args: &[&str]) -> String {
        let out = Command::new("sbatch")
            .args(["--parsable", "--ntasks=3", "--output"])
            .arg(self.dir.join("log/job-%j.out"))
            .arg("deploy/slurm/oni.sbatch")
            .args(oni_args)
            .current_dir(repo_root())
            .env("SLURM_CONF", &self.conf)
            .env("ONI_BIN", oni())
            .env("ONI_RUN_DIR", run_dir)
            .env("ONI_LEARNER_PORT", ports.0.to_string())
            .env("ONI_METRICS_PORT", ports.1.to_string())
            .output()
            .unwrap();
        assert!(out.status.success(), "sbatch: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().split(';').next().unwrap().to_string()
    }

    /// The job's steps, `(step id, name)`.
    fn steps(&self, job: &str) -> Vec<(String, String)> {
        let text = self.run("squeue", &["-h", "-s", "-j", job, "-o", "%i %j"]).unwrap_or_default();
        text.lines().filter_map(|l| l.split_once(' ')).map(|(i, n)| (i.to_string(), n.trim().to_string())).collect()
    }

    fn job_gone(&self, job: &str) -> bool {
        self.run("squeue", &["-h", "-j", job]).is_none_or(|s| s.trim().is_empty())
    }

    fn job_log(&self, job: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("log/job-{job}.out"))).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(jobs) = self.run("squeue", &["-h", "-o", "%i"]) {
            for job in jobs.split_whitespace() {
                let _ = self.run("scancel", &[job]);
            }
            let t = Instant::now();
            while self.run("squeue", &["-h", "-o", "%i"]).is_some_and(|s| !s.trim().is_empty())
                && t.elapsed() < Duration::from_secs(45)
            {
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        for d in self.daemons.iter_mut().rev() {
            d.kill9();
        }
        // whatever a killed slurmstepd left behind runs with this test's paths in its arguments
        let _ = Command::new("pkill").arg("-9").arg("-f").arg(self.dir.parent().unwrap()).status();
    }
}

fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(t.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The learner's newest progress row: (env steps, updates).
fn progress(run_dir: &Path) -> (u64, u64) {
    let text = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap_or_default();
    text.lines()
        .rev()
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| (v["env_steps"].as_u64().unwrap_or(0), v["updates"].as_u64().unwrap_or(0)))
        .unwrap_or((0, 0))
}

fn learner_log(run_dir: &Path) -> String {
    std::fs::read_to_string(run_dir.join("logs/learner.log")).unwrap_or_default()
}

#[test]
fn a_slurm_job_trains_loses_an_actor_is_cancelled_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path());
    let run_dir = dir.path().join("run");
    let ports = (free_port(), free_port());
    let args =
        ["--set", "run.max_env_steps=0", "--set", "learner.checkpoint_interval_secs=10", "--set", "actor.num_envs=8"];

    let submitted = Instant::now();
    let job = cluster.submit(&run_dir, ports, &args);
    wait_until("the first update", Duration::from_secs(120), || progress(&run_dir).1 > 0);
    eprintln!("submit → first update: {:.1} s", submitted.elapsed().as_secs_f64());
    let steps = cluster.steps(&job);
    let names: Vec<&str> = steps.iter().map(|(_, n)| n.as_str()).collect();
    for want in ["learner", "actor-1", "actor-2"] {
        assert!(names.contains(&want), "job {job} steps {steps:?}:\n{}", cluster.job_log(&job));
    }

    // one actor's node is lost: the other keeps the learner training
    let (step, _) = steps.iter().find(|(_, n)| n == "actor-2").unwrap().clone();
    assert!(cluster.run("scancel", &[&step]).is_some());
    wait_until("the actor step to end", Duration::from_secs(60), || {
        !cluster.steps(&job).iter().any(|(_, n)| n == "actor-2")
    });
    let before = progress(&run_dir).0;
    wait_until("training after the actor's loss", Duration::from_secs(60), || progress(&run_dir).0 > before + 20_000);
    assert!(cluster.steps(&job).iter().any(|(_, n)| n == "learner"), "the learner step ended with the actor");

    // Slurm requeues the job: SIGTERM to every step, a final checkpoint, and once the requeue
    // delay (cred_expire) has passed the job starts again and resumes from that checkpoint
    let (steps_at_requeue, _) = progress(&run_dir);
    let requeued = Instant::now();
    assert!(cluster.run("scontrol", &["requeue", &job]).is_some(), "scontrol requeue {job}");
    wait_until("the requeued job to resume", Duration::from_secs(180), || {
        learner_log(&run_dir).contains("resumed from checkpoint")
    });
    let log = learner_log(&run_dir);
    let signal = log.find("signal received").unwrap_or_else(|| panic!("the learner saw no signal:\n{log}"));
    let resumed_at = log.find("resumed from checkpoint").unwrap();
    assert!(log[signal..resumed_at].contains("checkpoint written"), "no final checkpoint before the requeue:\n{log}");
    let resumed = logged_steps(&log, "resumed from checkpoint").unwrap();
    assert!(
        resumed >= steps_at_requeue,
        "resumed at {resumed} steps; {steps_at_requeue} were trained before the requeue"
    );
    assert!(cluster.job_log(&job).contains("(restart 1)"), "{}", cluster.job_log(&job));
    wait_until("training after the requeue", Duration::from_secs(120), || progress(&run_dir).0 > resumed + 20_000);
    eprintln!("requeue → training again: {:.1} s", requeued.elapsed().as_secs_f64());

    // scancel: SIGTERM to every step, and the learner writes its final checkpoint
    assert!(cluster.run("scancel", &[&job]).is_some());
    wait_until("the job to end", Duration::from_secs(90), || cluster.job_gone(&job));
    let log = learner_log(&run_dir);
    let signal = log.rfind("signal received").unwrap_or_else(|| panic!("the learner saw no signal:\n{log}"));
    assert!(signal > resumed_at, "the requeued learner saw no signal:\n{log}");
    assert!(log[signal..].contains("checkpoint written"), "no final checkpoint after the signal:\n{log}");
    let (steps_at_cancel, _) = progress(&run_dir);

    // resubmitted (as a requeue would restart it): it resumes from that checkpoint
    let again = cluster.submit(&run_dir, ports, &args);
    wait_until("the resumed job to train", Duration::from_secs(120), || {
        learner_log(&run_dir).matches("resumed from checkpoint").count() == 2 && progress(&run_dir).0 > steps_at_cancel
    });
    let log = learner_log(&run_dir);
    let env_steps = logged_steps(&log, "resumed from checkpoint").unwrap();
    assert!(env_steps >= steps_at_cancel.saturating_sub(20_000), "resumed at {env_steps} of {steps_at_cancel} steps");
    assert!(cluster.run("scancel", &[&again]).is_some());
    wait_until("the second job to end", Duration::from_secs(90), || cluster.job_gone(&again));
}
