// Package training is the one code path by which Drover trains a model on
// a machine: `drover train` on an engineer's laptop and the agent running
// a retraining job the hub scheduled both call it, so that a job trains
// exactly as the command does.
//
// It holds:
//
//   - The native runner ([NativeOptions], [TrainNative]): a linear model
//     trained in-process on a CSV file, its artifact and a metrics file in
//     exectrain's format written to an output directory, and — given the
//     champion — the champion scored on the very rows the candidate was
//     held out on.
//   - Any runner that trains over the runner protocol ([TrainWith], a
//     [Trainer]): an exec trainer or a runner plugin's client, its output,
//     progress and metric points handed to an [Observer]; given a champion
//     (TrainRequest.champion_artifact_path), the runner reports its scores
//     as champion_<metric>, which become the result's ChampionMetrics.
//   - The exec runner ([TrainExec]): a configured command run through
//     package exectrain with [TrainWith]; the command finds the champion
//     in DROVER_CHAMPION_ARTIFACT and DROVER_CHAMPION_FORMAT.
//   - The verdict ([Judge], [DefaultMetric], [LowerIsBetter]) and the
//     metrics that can be recorded ([FiniteOnly]).
//   - The reference profile of a data set, for drift ([Profile]).
//   - The assembly of a retraining data set from a base CSV and the
//     labelled rows agents hand in ([Assemble]).
package training
