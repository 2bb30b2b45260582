"""churn: customer-churn model training that scales out on Dask."""

from churn._defaults import register as _register_defaults

_register_defaults()

__version__ = "0.1.0"
