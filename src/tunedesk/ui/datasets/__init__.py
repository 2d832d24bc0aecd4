"""The Datasets area: import, label, clean, split and version data sets (``DatasetsPanel``)."""
