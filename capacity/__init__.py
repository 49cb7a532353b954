"""Capacity planning (roofline hardware models, training and serving planners): see issue 6."""
