"""MLflow models-from-code entry: the pyfunc that the registry stores for churn models.

Logged by :func:`churn.tracking.log_model`; its threshold comes from the model config.
"""

import mlflow

from churn.tracking import ChurnModel

mlflow.models.set_model(ChurnModel())
