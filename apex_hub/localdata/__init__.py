"""Package data of local mode (``apex-hub local``): the demo catalogue, the demo service policies and
the JupyterLab page config of local workspaces. Shipped in the wheel, so local mode needs no checkout."""
