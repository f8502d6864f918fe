# The one-shot supernet + evolutionary search of configs/dms/fmnist/*_evolution.py (the paper's
# Table 3 baseline, ScaleNet's strategy): the supernet is trained with the one recipe, every
# step on the sandwich's structures (largest, smallest, two random: the mean of their losses),
# then EvolutionSearchHook evolves structures under target_ratio of the supernet's MACs (the
# benchmark sets it), each scored on held-out training images with BatchNorm recalibrated, and
# leaves the best one set in the last checkpoint for tools/export_subnet.py --reinit.
target_ratio = 0.5
# Sampled (and evolved) widths keep at least this fraction of their channels: the smallest
# structure is a quarter-width network, not one channel per layer.
min_width_fraction = 0.25
# Held-out images: the 200 per class after the training subset's (the recipe trains on the
# first train_subset / 10 per class).
held_out_per_class = 200
evolution = dict(population_size=20, generations=5, num_parents=5, num_mutation=10,
                 mutate_prob=0.2, calib_batches=10)
