"""Running thresher on Ray clusters: job submission (Ray Jobs API) and cluster templates."""
