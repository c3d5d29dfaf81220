"""Captum's class names and signatures over funcattr's transforms: Captum code runs with one import changed."""
