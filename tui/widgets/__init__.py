"""The views (one per tab) and the widgets they are made of."""
