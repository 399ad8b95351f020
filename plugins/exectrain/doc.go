// Package exectrain is Drover's exec trainer: a built-in runner that
// trains by running a command, such as `python3 train.py`, and speaks to it
// through its environment, its output and one file. It implements
// sdk.Trainer in-process, inside the agent, with no plugin round trip.
//
// The command is the agent's configuration (Config.Command), never part of
// a training request: the hub chooses the data set, the parameters and the
// target, but it must not be able to run arbitrary commands on an agent,
// so a compromised or mistaken hub can do no more than start the training
// the agent's operator installed.
//
// # The environment
//
// The command starts in Config.Dir, in a process group of its own, with
// stdin from /dev/null and a small environment: PATH, HOME and LANG from
// the agent's, PYTHONUNBUFFERED=1 (so that a Python script's progress
// arrives as it happens), then Config.Env, then:
//
//	DROVER_DATASET        the data set, an absolute path (TrainRequest.dataset_path)
//	DROVER_OUTPUT_DIR     the output directory, an absolute path, created if missing
//	DROVER_TARGET         the column to predict; empty when the request names none
//	DROVER_PARAMS         every parameter, as a JSON object of strings
//	DROVER_PARAM_<NAME>   one variable per parameter: the name upper-cased, every
//	                      character other than A-Z and 0-9 replaced by "_"
//	                      (learning-rate is DROVER_PARAM_LEARNING_RATE)
//	DROVER_SCHEMA         the feature schema (drover.v1.FeatureSchema) as
//	                      protojson; unset when the request has none
//	DROVER_METRICS_FILE   $DROVER_OUTPUT_DIR/metrics.json, which the command writes
//	DROVER_CHAMPION_ARTIFACT
//	                      the champion to score on the same hold-out, an absolute
//	                      path (TrainRequest.champion_artifact_path); unset when
//	                      the request has none
//	DROVER_CHAMPION_FORMAT
//	                      the champion's artifact format (TrainRequest.champion_format),
//	                      set with DROVER_CHAMPION_ARTIFACT
//	DROVER_IGNORE         the columns that are not features (TrainRequest.ignore), as
//	                      a JSON array of strings; unset when the request names none
//
// A command given a champion reports the champion's scores on its own
// hold-out in its metrics file as champion_<metric> (champion_accuracy
// beside accuracy), as every runner does in its TrainResult.
//
// The agent's other variables (its tokens among them) are not passed on.
// Two parameters whose names give the same variable are refused.
//
// # Output
//
// Every line the command writes to stdout or stderr (the two are merged, in
// order) is sent as a log_line event, up to 16 KiB of it; a longer line is
// cut there and marked, and the rest of it dropped, so that no output,
// however large, costs more than a fixed amount of memory. Two kinds of
// line are also read as directives and sent as progress events as well:
//
//	drover:progress <fraction> [stage]   fraction from 0 to 1; the stage is
//	                                     the rest of the line (without one,
//	                                     the previous stage stands)
//	drover:metric <name> <value>         a metric as training goes, e.g. a loss
//
// The directive starts the line; its words are separated by white space. A metric's
// progress event carries the last fraction and stage reported.
// A directive that does not parse (a fraction outside 0..1, a value that is
// not a number) is only a log line.
//
// # The metrics file
//
// Once the command exits 0, the trainer reads $DROVER_OUTPUT_DIR/metrics.json
// (removed before the command starts, so a stale one never counts), a JSON
// object of at most 1 MiB:
//
//	{
//	  "metrics": {"accuracy": 0.81, "roc_auc": 0.84},
//	  "artifact": "model.pkl",
//	  "format": "sklearn-pickle",
//	  "reference_profile": "profile.json"
//	}
//
// metrics are the hold-out metrics, numbers (a null is left out: unknown);
// artifact, required, is a regular file inside the output directory,
// relative to it or absolute; format, optional, overrides Config.Format;
// reference_profile, optional, names a file inside the output directory
// (at most 16 MiB) whose bytes become the result's reference profile.
// Unknown fields are refused, so that a misspelt one is not silently
// ignored. A path that leaves the output directory, by ".." or through a
// symbolic link, is refused, as is an artifact that is itself a link.
//
// # Failure and cancellation
//
// A command that exits non-zero or dies of a signal, a metrics file that is
// missing or invalid, or an artifact that is missing fails the run with an
// error (a *RunError) that says which, followed by the command's last lines
// of output. When the context is cancelled or Config.Timeout passes, the
// whole process group gets SIGTERM and, if anything in it is still running
// Config.KillGrace later, SIGKILL. Whatever the command leaves running in
// its group when it exits, by any route, is killed with SIGKILL, so a
// training run never leaves orphans behind.
package exectrain
