"""Multi-task finetuning and evaluation: the library side of train_tasks.py, eval_tasks.py and
eval_retrieval.py.

Modules, by concern: `loading` (tasks, datasets, the model and its starting weights), `run` (a
task's objective, loaders and progress), `schedule` (which task trains next and when each is
evaluated: ours or 12-in-1's round robin), `cleaning` (12-in-1's removal of test images from
training sets), `evaluate` (evaluators, retrieval scoring, metrics and best checkpoints).
Everything is importable from `vilbert.finetune`.

    tasks = load_tasks("1-6-7", "vlbert_tasks.yml")            # {task id: Task}, with loss scales
    datasets = build_on_main_first(lambda: build_datasets(tasks, tokenizer, "train"), dist)
    model = load_task_model(ViLBertForVLTasks, "save/pretrain/checkpoints/step-N", ...)
    runs = [TaskRun(task, train_set, val_set, ...) for ...]     # loaders, objective, progress
    schedule = build_schedule("proportional", runs)              # or "round_robin" (12-in-1's)
    while (run := schedule.next_task()) is not None:            # the task furthest behind goes next
        out = train_step(model, run.next_batches(), run.objective, ...)
        schedule.advance(run, evaluate)                         # evaluates the tasks due now
    evaluator = evaluate_task(model, task, val_set, loader, precision, dist)
    scores = retrieval_scores(model, dataset, ...)              # (captions, images), every pair

Multi-task training (REFERENCE 2 and 5): each optimizer step trains one task on one (global) batch
of its own data; tasks take turns so that each moves through its own schedule at the same pace,
each task keeps its own number of epochs (the originals gave every task the last task's count,
REFERENCE 7), its loss is scaled by task lr / smallest task lr, and it is evaluated at the end of
each of its epochs.
"""

from vilbert.finetune.loading import (TASK_HEAD_PREFIXES, build_datasets, build_on_main_first, classifier_labels,
                                      create_precision, init_vil_logit_from_alignment, is_vilbert_checkpoint,
                                      load_task_model, load_tasks, needs_multitask_heads, run_directory,
                                      split_name, task_head_learning_rates)
from vilbert.finetune.run import (NUM_TASK_TOKENS, TaskObjective, TaskRun, collate_trimmed_text, make_loader,
                                  next_task, primary_metric, task_token_row)
from vilbert.finetune.schedule import (SCHEDULES, OncePerRound, PlateauPause, ProportionalSchedule, RoundRobinSchedule,
                                       build_schedule)
from vilbert.finetune.cleaning import TEST_IMAGE_LISTS, CleanedDataset, clean_train_sets, item_image_ids
from vilbert.finetune.evaluate import (evaluate_task, metrics_table, pair_scores, retrieval_metrics,
                                       retrieval_scores, save_best, write_metrics)
from vilbert.training.cli import SetupError  # the scripts import it from here too
