"""Models-from-code entry point of the registered churn model (MLflow loads this file)."""

import mlflow

from churn.serving.pyfunc import ChurnModel

mlflow.models.set_model(ChurnModel())
