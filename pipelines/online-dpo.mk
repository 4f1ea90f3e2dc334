# The online iterative RLHF loop of the paper (Dong, Xiong et al., 2024) as a
# Makefile: for each iteration, sample n responses per prompt from the current
# policy, score them with the reward model, keep best vs worst, add reference
# log-probs, and train the policy with DPO.
#
#   make -f pipelines/online-dpo.mk SFT=sft/ RM=rm/ PROMPTS=prompts.msgpack.zst OUT=run
#
# Every intermediate is a file (OUT/iterN/{prompts,samples,scored,pairs,pairs.ref}
# .msgpack.zst, OUT/iterN/policy/, OUT/iterN/metrics.msgpack.zst), inspectable
# with rl-cat | jq. Make's dependency graph is the resume: an interrupted run
# redoes only what is missing (a killed rl-dpo continues from its checkpoint).
# A failed stage never leaves a file that looks finished (.DELETE_ON_ERROR,
# pipefail); a policy counts as trained when OUT/iterN/policy.done exists
# (its directory also holds rl-dpo's intermediate checkpoints).
SHELL := /bin/bash
# Several tools compute at once in a pipeline: OpenMP threads that spin while
# waiting would steal the cores from each other.
export GOMP_SPINCOUNT ?= 10000
.SHELLFLAGS := -o pipefail -euc
.DELETE_ON_ERROR:
.SECONDARY:

SFT        ?= $(error set SFT=DIR, the starting policy (and reference))
RM         ?= $(error set RM=DIR, the reward model (or SCORER=command))
SCORER     ?=#                   another reward filter instead of rl-score -m RM (e.g. rl-lexicon -l FILE)
PROMPTS    ?= $(error set PROMPTS=FILE, a stream of prompt records)
OUT        ?= run
ITERS      ?= 3
PER_ITER   ?= 0#                 prompts per iteration, consecutive slices of PROMPTS (0: all, every iteration)
REF        ?= sft#               reference: sft, or prev (the previous iterate)
N          ?= 8
TEMPERATURE?= 1.0
MAX_NEW    ?= 256
MAX_PROMPT ?= 1024
SEED       ?= 1
PAIR_MODE  ?= max-min
BETA       ?= 0.1
LR         ?= 5e-7
BATCH      ?= 128
MICRO      ?= 4
EPOCHS     ?= 1
SHARDS     ?= 1#                 > 1: rl-gen, rl-score and rl-logp over pipelines/shard -j SHARDS
GEN_ARGS   ?=
SCORE_ARGS ?=
DPO_ARGS   ?=
BIN        ?=#                   where the rl-* tools are (default: PATH)
Q          ?= -q

here := $(dir $(lastword $(MAKEFILE_LIST)))
tool = $(if $(BIN),$(BIN)/)$(1)
# sharded(cmd): run a per-record filter, over SHARDS workers when asked
sharded = $(if $(filter-out 1,$(SHARDS)),$(here)shard -j $(SHARDS) -- $(1),$(1))
policy_of = $(if $(filter 0,$(1)),$(SFT),$(OUT)/iter$(1)/policy)
ready_of = $(if $(filter 0,$(1)),$(SFT)/config.json,$(OUT)/iter$(1)/policy.done)
ref_of = $(if $(filter prev,$(REF)),$(call policy_of,$(1)),$(SFT))

.PHONY: all
all: $(OUT)/iter$(ITERS)/policy.done

# iteration $(1); the previous one is $(2)
define iteration
$(OUT)/iter$(1)/prompts.msgpack.zst: $(PROMPTS)
	@mkdir -p $$(@D)
	$(call tool,rl-cat) -p $(if $(filter-out 0,$(PER_ITER)),--skip $$$$(( ($(1) - 1) * $(PER_ITER) )) -n $(PER_ITER)) \
	    --set iter=$(1) $$< > $$@

$(OUT)/iter$(1)/samples.msgpack.zst: $(OUT)/iter$(1)/prompts.msgpack.zst $(call ready_of,$(2))
	$(call sharded,$(call tool,rl-gen) $(Q) -m $(call policy_of,$(2)) -n $(N) -t $(TEMPERATURE) \
	    --max-new-tokens $(MAX_NEW) --max-prompt-tokens $(MAX_PROMPT) --seed $$$$(( $(SEED) * 1000 + $(1) )) $(GEN_ARGS)) \
	    < $$< > $$@

$(OUT)/iter$(1)/scored.msgpack.zst: $(OUT)/iter$(1)/samples.msgpack.zst $(if $(SCORER),,$(RM)/config.json)
	$(call sharded,$(or $(SCORER),$(call tool,rl-score) $(Q) -m $(RM) $(SCORE_ARGS))) < $$< > $$@

$(OUT)/iter$(1)/pairs.msgpack.zst: $(OUT)/iter$(1)/scored.msgpack.zst
	$(call tool,rl-pair) $(Q) --mode $(PAIR_MODE) --seed $(SEED) < $$< > $$@

$(OUT)/iter$(1)/pairs.ref.msgpack.zst: $(OUT)/iter$(1)/pairs.msgpack.zst $(if $(filter prev,$(REF)),$(call ready_of,$(2)),$(SFT)/config.json)
	$(call sharded,$(call tool,rl-logp) $(Q) -m $(call ref_of,$(2))) < $$< > $$@

$(OUT)/iter$(1)/policy.done: $(OUT)/iter$(1)/pairs.ref.msgpack.zst $(call ready_of,$(2))
	$(call tool,rl-dpo) $(Q) -m $(call policy_of,$(2)) -o $(OUT)/iter$(1)/policy --resume --save-every 50 \
	    --beta $(BETA) --lr $(LR) --batch $(BATCH) --micro-batch $(MICRO) --epochs $(EPOCHS) --seed $(SEED) $(DPO_ARGS) \
	    < $$< > $(OUT)/iter$(1)/metrics.msgpack.zst
	touch $$@
endef
$(foreach i,$(shell seq 1 $(ITERS)),$(eval $(call iteration,$(i),$(shell expr $(i) - 1))))
