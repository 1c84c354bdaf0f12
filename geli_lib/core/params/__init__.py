"""Profiles and parameters: typed dataclasses, validated on load.

A profile (``smoke``, ``cpu``, ``gpu``) is one YAML file ``params/<profile>.yaml``
whose sections map onto the dataclasses below. Every field has a docstring (the
string literal under it). Loading checks unknown keys, types and ranges and
raises :class:`ParamError` naming the file and the dotted field, e.g.
``params/cpu.yaml: simulation.score_noise: must be >= 0, got -1``.

Notebooks take ``profile``, ``corpus`` and ``data_path`` as papermill
parameters and call :func:`load_params` with them as overrides, so any notebook
runs on real data by parameters alone. Any other override that changes a
parameter (``papermill … -p lam 0.1``) makes the run ad hoc: its results go to a
folder of their own, named by the changed parameters
(:attr:`StudyParams.results_key`), never over the study's. Under papermill the
folder is named by the ``-p`` values that differ from the notebook's defaults
(``lam=0.1_seed=0``), so a parameter of the notebook alone counts too. Inside a notebook run
by papermill, :func:`load_params` also refuses a ``-p`` name the notebook does
not declare (a typo would otherwise run the notebook on its defaults).

The sections follow the study's chain, one module each: ``corpus`` (simulation,
pairs, splits), ``listener`` (features), ``reward`` (reward functions, LLM-GELI),
``alignment`` (RL, evaluation), ``compute`` (where work runs), ``study`` (a
profile's sections together), with ``base`` (places, errors, checks) below them
and ``loading`` (YAML, overrides, ad-hoc keys) above.
"""

from geli_lib.core.params.alignment import (
    RL_ALGORITHMS,
    EvalParams,
    RlAlgorithm,
    RLParams,
)
from geli_lib.core.params.base import (
    ADHOC_DIR,
    CORPORA,
    MAX_INT,
    PARAMS_DIR,
    PROFILES,
    REPO_ROOT,
    RUNNER_PARAMETERS,
    ParamError,
    _FieldError,
    field_docs,
    to_dict,
)
from geli_lib.core.params.compute import (
    COMPUTE_ENV,
    SCHEDULERS,
    ComputeParams,
    SlurmParams,
)
from geli_lib.core.params.corpus import (
    DataParams,
    SimulationParams,
    SplitParams,
)
from geli_lib.core.params.listener import (
    FeatureParams,
)
from geli_lib.core.params.loading import (
    adhoc_name,
    check_injected_types,
    compute_from_env,
    injected_parameters,
    key_value,
    load_params,
)
from geli_lib.core.params.reward import (
    ENCODERS,
    GE_FORMS,
    GE_METHODS,
    LI_SIGNALS,
    LLM_BACKENDS,
    REWARD_FUNCTION_IDS,
    REWARD_METHODS,
    Encoder,
    GeForm,
    GeMethod,
    LiSignal,
    LlmBackend,
    LLMParams,
    RewardFunctionId,
    RewardMethod,
    RewardParams,
    RrdSampling,
    WarmStart,
)
from geli_lib.core.params.study import (
    StudyParams,
)

__all__ = [
    "REPO_ROOT",
    "PARAMS_DIR",
    "PROFILES",
    "CORPORA",
    "ADHOC_DIR",
    "RUNNER_PARAMETERS",
    "MAX_INT",
    "ParamError",
    "_FieldError",
    "to_dict",
    "field_docs",
    "SimulationParams",
    "DataParams",
    "SplitParams",
    "FeatureParams",
    "RewardMethod",
    "GeMethod",
    "LiSignal",
    "GeForm",
    "Encoder",
    "RrdSampling",
    "WarmStart",
    "RewardFunctionId",
    "REWARD_METHODS",
    "REWARD_FUNCTION_IDS",
    "GE_METHODS",
    "LI_SIGNALS",
    "GE_FORMS",
    "ENCODERS",
    "RewardParams",
    "LlmBackend",
    "LLM_BACKENDS",
    "LLMParams",
    "RlAlgorithm",
    "RL_ALGORITHMS",
    "RLParams",
    "EvalParams",
    "SCHEDULERS",
    "COMPUTE_ENV",
    "SlurmParams",
    "ComputeParams",
    "StudyParams",
    "adhoc_name",
    "injected_parameters",
    "key_value",
    "check_injected_types",
    "compute_from_env",
    "load_params",
]
